"""streamae: streaming anomaly detection on Kafka with autoencoders."""

__version__ = "0.1.0"
