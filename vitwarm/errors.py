"""vitwarm's exception base class."""


class VitwarmError(Exception):
    """An anticipated failure whose message names the bad key, file, shard or sample and what would be valid."""
