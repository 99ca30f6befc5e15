"""Choose an upstream and survive its failures: order and health, breakers, failover."""
