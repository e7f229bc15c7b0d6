"""The directory service from the config: paths resolved, the service password read."""

from __future__ import annotations

import ssl

import msgspec
from ldap3.core.exceptions import LDAPSSLConfigurationError
from prometheus_client import CollectorRegistry

from drivers.clock import Clock
from drivers.credentials import SecretError, read_secret
from gateway.config import Config
from gateway.directory.client import LdapClient
from gateway.directory.service import Directory, DirectoryMetrics


class DirectorySetupError(ValueError):
    """A file the directory needs cannot be used; the message names the key, no secret."""


def build_directory(config: Config, clock: Clock, registry: CollectorRegistry) -> Directory:
    c = config.directory
    password_file = c.bind_password_file
    try:
        password = read_secret(
            file=None if password_file is None else str(config.resolve(password_file)),
            credential=c.bind_password_credential,
        )
    except SecretError as e:
        key = "bind_password_file" if password_file is not None else "bind_password_credential"
        raise DirectorySetupError(f"directory.{key}: {e}") from None
    ca_file = config.resolve(c.ca_file or "")
    resolved = msgspec.structs.replace(c, ca_file=str(ca_file))
    try:
        client = LdapClient(resolved, password or "")
    except (OSError, ssl.SSLError, LDAPSSLConfigurationError) as e:
        raise DirectorySetupError(f"directory.ca_file: cannot load {ca_file}: {e}") from None
    return Directory(resolved, client, clock, DirectoryMetrics(registry))
