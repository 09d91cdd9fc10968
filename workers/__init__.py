"""The worker process and the ``fsmflow`` command line."""
