"""Change-data-capture from a legacy MySQL/MariaDB binlog to RabbitMQ and the CRM, cache and search sinks."""

__version__ = "0.1.0"
