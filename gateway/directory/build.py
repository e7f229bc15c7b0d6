"""The directory service from the config: paths resolved, the service password read."""

from __future__ import annotations

import msgspec
from prometheus_client import CollectorRegistry

from drivers.clock import Clock
from drivers.credentials import read_secret
from gateway.config import Config
from gateway.directory.client import LdapClient
from gateway.directory.service import Directory, DirectoryMetrics


def build_directory(config: Config, clock: Clock, registry: CollectorRegistry) -> Directory:
    """Raises `drivers.credentials.SecretError` when the password cannot be read."""
    c = config.directory
    password_file = c.bind_password_file
    password = read_secret(
        file=None if password_file is None else str(config.resolve(password_file)),
        credential=c.bind_password_credential,
    )
    resolved = msgspec.structs.replace(c, ca_file=str(config.resolve(c.ca_file or "")))
    client = LdapClient(resolved, password or "")
    return Directory(resolved, client, clock, DirectoryMetrics(registry))
