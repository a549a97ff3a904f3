"""The local lab: Docker hosts made of network namespaces, each with its own sshd and dockerd.

How a lab is wired: the module docstring of `core.py` and "The local lab" in README.md.
"""
