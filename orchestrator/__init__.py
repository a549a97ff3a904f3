"""orch: cross-host macvlan networking for plain Docker hosts, driven over SSH."""

__version__ = "0.1.0"
