"""sidecar: an authentication sidecar proxy (OpenID Connect sign-in in front of unmodified apps)."""

__version__ = "0.1.0"
