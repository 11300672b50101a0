"""Kafka transports other than the default kafka-python (``STREAMAE_KAFKA__CLIENT``)."""
