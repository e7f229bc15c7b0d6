"""The endpoint table's rows for contacts, groups, saved audiences and the contacts
import (`gateway.api.contacts`); `endpoints(Endpoint)` gives them (the server's
`Endpoint` class is passed in, so this module does not import the server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gateway.api.contacts import (
    AUDIENCE_ID,
    CONTACT_KEY,
    FILTERS,
    GROUP_ID,
    JOB_ID,
    MAP_PATTERN,
    AttributesRequest,
    AudienceList,
    AudienceMembersRequest,
    AudienceRequest,
    AudienceView,
    ContactDetailView,
    ContactList,
    CountRequest,
    CountView,
    GroupChange,
    GroupList,
    GroupRequest,
    GroupView,
    ImportView,
    MembersChanged,
    MembersRequest,
    add_audience,
    add_members,
    count_audience,
    delete_audience,
    delete_group,
    get_audience,
    get_contact,
    get_group,
    get_import,
    list_audiences,
    list_contacts,
    list_groups,
    patch_contact,
    patch_group,
    post_audience,
    post_group,
    put_audience,
    remove_members,
    start_import,
)
from gateway.api.openapi import Answer, Link, Query
from gateway.contacts.csv_import import regions
from gateway.contacts.usecase import MAX_PAGE

E = TypeVar("E")

_NONE = Answer(404, "`not_found`: no such contact, group or audience")
_NAME = Answer(409, "`name_taken`: another group (or audience) has this name")
_WRITE = Answer(403, "`forbidden`: changes need the 'consent' or 'admin' scope")
_ATTR = Answer(
    422,
    "`invalid_language`, `invalid_time_zone`, `invalid_age_band`, `invalid_clinic`,"
    " `invalid_preferences`, `invalid_tags`, `invalid_name`, `invalid_field`, `too_many`",
)
_FILTER_QUERY = tuple(
    Query(
        name,
        f"only contacts with {'all' if name == 'preference' else 'one'} of these {target}"
        " (comma-separated keys)",
        {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}(,[A-Za-z0-9_.:-]{1,64})*$"},
    )
    for name, target in FILTERS.items()
)


def endpoints(make: Callable[..., E]) -> tuple[E, ...]:
    """The rows `gateway.api.server` adds to its table (`make` is its `Endpoint`)."""
    return (
        make(
            "GET",
            "/api/v1/contacts/list",
            list_contacts,
            "read",
            "Contacts matching the filters (numbers masked), in key order, with the total",
            None,
            ContactList,
            query=(
                *_FILTER_QUERY,
                Query(
                    "limit",
                    f"page size, 1 to {MAX_PAGE}",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
                ),
                Query(
                    "cursor",
                    "next_cursor of the previous page",
                    {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                ),
            ),
            answers=(Answer(400, "`invalid_query`: a query parameter is invalid"),),
        ),
        make(
            "POST",
            "/api/v1/contacts/imports",
            start_import,
            "consent",
            "Import contacts from a CSV body (columns by header name or `map`; numbers"
            " read in `region`; every row into `group`); 202 with the job to poll (audited)",
            None,
            ImportView,
            202,
            query=(
                Query(
                    "map",
                    "FIELD=Header,... (fields: number, language, time_zone, age_band,"
                    " clinic, preferences, tags, groups)",
                    {"type": "string", "pattern": MAP_PATTERN},
                ),
                Query(
                    "region",
                    "ISO 3166 region national numbers are read in",
                    {"type": "string", "enum": regions()},
                ),
                Query(
                    "group",
                    "a group id every row joins",
                    {"type": "string", "pattern": "^g[0-9a-f]{12}$"},
                ),
                Query(
                    "name",
                    "the file's name, for the audit trail",
                    {"type": "string", "minLength": 1, "maxLength": 128},
                ),
            ),
            answers=(
                Answer(400, "`invalid_query`: a bad `map` or an unknown parameter"),
                _WRITE,
                Answer(404, "`not_found`: no such group"),
                Answer(413, "`file_too_large`"),
                Answer(415, "`unsupported_media_type`: not text/csv"),
                Answer(422, "`invalid_region`"),
            ),
            links=(
                Link("GetImport", "getContactsImportsJob_id", {"job_id": "$response.body#/id"}),
            ),
            request_text="text/csv",
        ),
        make(
            "GET",
            f"/api/v1/contacts/imports/{JOB_ID}",
            get_import,
            "read",
            "An import's progress, counts and line errors (line, code, column; never a value)",
            None,
            ImportView,
            answers=(Answer(404, "`not_found`: no such import (finished ones are kept a while)"),),
        ),
        make(
            "GET",
            f"/api/v1/contacts/{CONTACT_KEY}",
            get_contact,
            "read",
            "A contact's attributes, tags, groups and consent standing (number masked)",
            None,
            ContactDetailView,
            answers=(_NONE,),
        ),
        make(
            "PATCH",
            f"/api/v1/contacts/{CONTACT_KEY}",
            patch_contact,
            "consent",
            "Set or clear a contact's language, time zone, age band, clinic, preferences or"
            " tags (audited)",
            AttributesRequest,
            ContactDetailView,
            answers=(_NONE, _WRITE, _ATTR),
        ),
        make(
            "GET",
            "/api/v1/groups",
            list_groups,
            "read",
            "Every group with its member count",
            None,
            GroupList,
        ),
        make(
            "POST",
            "/api/v1/groups",
            post_group,
            "consent",
            "Create a group (audited)",
            GroupRequest,
            GroupView,
            201,
            answers=(_NAME, _WRITE, _ATTR),
            links=(
                Link("GetGroup", "getGroupsGroup_id", {"group_id": "$response.body#/id"}),
                Link(
                    "AddMembers",
                    "postGroupsGroup_idMembersAudience",
                    {"group_id": "$response.body#/id"},
                ),
                Link("DeleteGroup", "deleteGroupsGroup_id", {"group_id": "$response.body#/id"}),
            ),
        ),
        make(
            "GET",
            f"/api/v1/groups/{GROUP_ID}",
            get_group,
            "read",
            "One group",
            None,
            GroupView,
            answers=(_NONE,),
        ),
        make(
            "PATCH",
            f"/api/v1/groups/{GROUP_ID}",
            patch_group,
            "consent",
            "Rename a group or change its description (audited)",
            GroupChange,
            GroupView,
            answers=(_NONE, _NAME, _WRITE, _ATTR),
        ),
        make(
            "DELETE",
            f"/api/v1/groups/{GROUP_ID}",
            delete_group,
            "consent",
            "Delete a group (its contacts stay; audited)",
            answers=(_NONE, _WRITE),
        ),
        make(
            "POST",
            f"/api/v1/groups/{GROUP_ID}/members",
            add_members,
            "consent",
            "Add contacts by key (audited)",
            MembersRequest,
            MembersChanged,
            answers=(_NONE, _WRITE, _ATTR),
        ),
        make(
            "POST",
            f"/api/v1/groups/{GROUP_ID}/members/audience",
            add_audience,
            "consent",
            "Add everyone in an audience, as it is now (audited)",
            AudienceMembersRequest,
            MembersChanged,
            answers=(_NONE, _WRITE),
        ),
        make(
            "POST",
            f"/api/v1/groups/{GROUP_ID}/members/remove",
            remove_members,
            "consent",
            "Remove contacts by key (audited)",
            MembersRequest,
            MembersChanged,
            answers=(_NONE, _WRITE, _ATTR),
        ),
        make(
            "GET",
            "/api/v1/audiences",
            list_audiences,
            "read",
            "Saved audiences, each with its size now",
            None,
            AudienceList,
        ),
        make(
            "POST",
            "/api/v1/audiences",
            post_audience,
            "consent",
            "Save an audience under a name (audited)",
            AudienceRequest,
            AudienceView,
            201,
            answers=(_NAME, _WRITE, _ATTR),
            links=(
                Link(
                    "GetAudience", "getAudiencesAudience_id", {"audience_id": "$response.body#/id"}
                ),
                Link(
                    "DeleteAudience",
                    "deleteAudiencesAudience_id",
                    {"audience_id": "$response.body#/id"},
                ),
            ),
        ),
        make(
            "POST",
            "/api/v1/audiences/count",
            count_audience,
            "read",
            "How many contacts an audience has now (before anything is sent)",
            CountRequest,
            CountView,
        ),
        make(
            "GET",
            f"/api/v1/audiences/{AUDIENCE_ID}",
            get_audience,
            "read",
            "One saved audience with its size now",
            None,
            AudienceView,
            answers=(_NONE,),
        ),
        make(
            "PUT",
            f"/api/v1/audiences/{AUDIENCE_ID}",
            put_audience,
            "consent",
            "Replace a saved audience's name and filters (audited)",
            AudienceRequest,
            AudienceView,
            answers=(_NONE, _NAME, _WRITE, _ATTR),
        ),
        make(
            "DELETE",
            f"/api/v1/audiences/{AUDIENCE_ID}",
            delete_audience,
            "consent",
            "Delete a saved audience (audited)",
            answers=(_NONE, _WRITE),
        ),
    )
