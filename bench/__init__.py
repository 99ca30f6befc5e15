"""The benchmark: ``python -m bench`` (``make bench``); see ``__main__``."""
