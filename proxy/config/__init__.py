"""Configuration: the environment read once into a frozen ``Settings``, checked at start-up."""
