"""`[directory]`: panel sign-in with the hospital's directory (LDAP / Active Directory).

Off unless `enabled`. Always over TLS: `ldaps://` URLs, or `ldap://` with StartTLS
(required, never optional), the server's certificate checked against `ca_file` and
its name against the URL's host. The service account's password comes from a file
or a systemd credential, never from the TOML itself.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.panel_users import Role

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
GroupMode = Literal["ad_nested", "member"]

# Where several mapped groups give a user different roles, the first of these wins.
ROLE_RANK: tuple[Role, ...] = (Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.VIEWER)


class DirectoryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    # Tried in order for the connection only: a refused password is never tried on another.
    urls: tuple[str, ...] = ()
    ca_file: str | None = None  # PEM of the CA(s) that sign the directory's certificate
    bind_dn: str = ""  # the service account that searches
    bind_password_file: str | None = None
    bind_password_credential: str | None = None  # a name in $CREDENTIALS_DIRECTORY
    user_base: str = ""
    # The name typed at sign-in is matched against this attribute (escaped), ANDed with
    # `user_filter`: sAMAccountName or userPrincipalName (AD), uid (OpenLDAP).
    login_attribute: str = "uid"
    user_filter: str = "(objectClass=person)"
    # The directory's stable id: objectGUID (AD), entryUUID (OpenLDAP). Users are kept
    # under it, so a renamed account keeps its second factor and its audit trail.
    id_attribute: str = "entryUUID"
    # ad_nested: one search with LDAP_MATCHING_RULE_IN_CHAIN (AD resolves nesting);
    # member: groups whose `member_attribute` names the user, then groups naming those
    # groups, breadth first, at most `max_group_depth` levels (OpenLDAP).
    group_mode: GroupMode = "member"
    group_base: str = ""  # where groups are searched; empty: user_base
    member_attribute: str = "member"
    max_group_depth: Annotated[int, msgspec.Meta(ge=1, le=32)] = 8
    roles: dict[str, Role] = msgspec.field(default_factory=dict)  # group DN -> role
    # Roles are read at every sign-in and again at a session's first request after
    # this many seconds: a user taken out of the groups, or disabled, loses access then.
    recheck_interval: PositiveFloat = 300.0
    connect_timeout: PositiveFloat = 3.0
    timeout: PositiveFloat = 5.0  # per operation (bind, search)
    # Failed directory sign-ins that lock the name here. Keep it below the directory's
    # own lockout threshold (AD: "Account lockout threshold", often 5 or 10), so a
    # guesser trips smsgw's lock and never locks the hospital account.
    max_failed_logins: Annotated[int, msgspec.Meta(ge=1, le=100)] = 4

    def problems(self) -> str | None:
        """The first bad key, as `directory.key: problem`."""
        if not self.enabled:
            return None
        if not self.urls:
            return "directory.urls: name at least one ldaps:// or ldap:// (StartTLS) URL"
        for i, url in enumerate(self.urls):
            scheme, sep, rest = url.partition("://")
            if not sep or scheme.lower() not in ("ldap", "ldaps") or not rest.strip("/"):
                return (
                    f"directory.urls[{i}]: expected ldaps://HOST[:PORT] or ldap://HOST[:PORT]"
                    " (StartTLS)"
                )
        if not self.ca_file:
            return "directory.ca_file: name the CA file that signs the directory's certificate"
        if not self.bind_dn:
            return "directory.bind_dn: name the service account that searches the directory"
        if (self.bind_password_file is None) == (self.bind_password_credential is None):
            return (
                "directory.bind_password_file: give exactly one of bind_password_file or"
                " bind_password_credential (never the password itself)"
            )
        if not self.user_base:
            return "directory.user_base: name the subtree where users are found"
        if not self.login_attribute.replace("-", "").isalnum():
            return "directory.login_attribute: expected an attribute name, e.g. sAMAccountName"
        if not (self.user_filter.startswith("(") and self.user_filter.endswith(")")):
            return (
                "directory.user_filter: expected an LDAP filter in parentheses,"
                ' e.g. "(objectClass=person)"'
            )
        if not self.roles:
            return (
                "directory.roles: map at least one group DN to a role,"
                ' e.g. "cn=smsgw-admins,ou=groups,dc=example,dc=org" = "admin"'
            )
        # ldap3 only with a directory: ~60 ms of every start-up's CPU without one.
        from ldap3.core.exceptions import LDAPInvalidDnError
        from ldap3.utils.dn import parse_dn

        for dn in self.roles:
            try:
                parse_dn(dn, strip=True)
            except LDAPInvalidDnError:
                return f"directory.roles: {dn!r} is not a group DN (cn=...,dc=...)"
        return None

    @property
    def groups_under(self) -> str:
        return self.group_base or self.user_base
