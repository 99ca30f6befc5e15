"""What one request did: its record, the metrics, the log lines, and the redaction of secrets."""
