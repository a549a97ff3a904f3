"""The local lab: Docker hosts made of network namespaces, each with its own sshd and dockerd.

See `orchestrator/lab/README.md` for how a lab is wired.
"""
