"""The README's walkthrough through a client generated from docs/openapi.json.

`cargo xtask test` generates the client with openapi-python-client into a temporary
directory as the package `crm_client`, starts a server, and runs this script with the
server's base URL as its argument and its admin token in CRM_ADMIN_TOKEN. It checks that a client made from the
committed document alone can do what the README does, and that it parses a 409 and a
422 into the document's `Problem` with its `code`. It names only models the document
names: the embedded operator is the document's `OperatorSummary` (a nullable reference),
not a type the generator made up for an inline schema.
"""

import os
import sys
from http import HTTPStatus

from crm_client import AuthenticatedClient
from crm_client.api.contacts import (
    assign_contact,
    close_contact,
    get_contact,
    list_contacts,
    register_contact,
)
from crm_client.api.health import get_health
from crm_client.api.leads import get_lead
from crm_client.api.operators import create_operator, list_operators
from crm_client.api.sources import create_source, list_sources, replace_source_weights
from crm_client.api.stats import get_operator_stats
from crm_client.models import (
    AssignContact,
    Contact,
    ContactStatus,
    CreateContact,
    CreateOperator,
    CreateSource,
    ErrorCode,
    OperatorSummary,
    Problem,
    ReplaceWeights,
    WeightInput,
)


def call(endpoint, expected: HTTPStatus, client: AuthenticatedClient, **kwargs):
    """Calls `endpoint`, checks the status, and returns the parsed body."""
    response = endpoint.sync_detailed(client=client, **kwargs)
    name = endpoint.__name__.rsplit(".", 1)[-1]
    if response.status_code != expected:
        sys.exit(f"{name} answered {response.status_code}, not {expected}: {response.content!r}")
    return response.parsed


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"failed: {what}")


def expect_problem(parsed, status: HTTPStatus, code: ErrorCode) -> None:
    """The body parsed into the document's problem type, with the expected code."""
    check(isinstance(parsed, Problem), f"a {status} parses into Problem, not {type(parsed)}")
    check(parsed.status == status, f"the problem's status is {status}, not {parsed.status}")
    check(parsed.code == code, f"the problem's code is {code}, not {parsed.code}")
    check(parsed.type_ == f"/problems/{code}", f"the problem's type names {code}")


def main(base_url: str, token: str) -> None:
    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    created, ok = HTTPStatus.CREATED, HTTPStatus.OK

    # The README's walkthrough: two operators, a source, weights, contacts.
    anna = call(create_operator, created, client, body=CreateOperator(name="Anna", max_active_contacts=2))
    boris = call(create_operator, created, client, body=CreateOperator(name="Boris", max_active_contacts=5))
    source = call(create_source, created, client, body=CreateSource(name="Telegram bot", code="tg"))
    weights = ReplaceWeights(
        operators=[WeightInput(operator_id=anna.id, weight=30), WeightInput(operator_id=boris.id, weight=10)]
    )
    call(replace_source_weights, ok, client, id=source.id, body=weights)
    first = call(
        register_contact,
        created,
        client,
        body=CreateContact(external_lead_id="tg-100500", source_code="tg", payload={"text": "hello"}),
    )
    check(isinstance(first, Contact), "a registration parses into Contact")
    check(first.operator_id in (anna.id, boris.id), f"the contact went to a weighted operator: {first.operator_id}")
    # The embedded operator is the document's OperatorSummary, or None when unassigned.
    check(isinstance(first.operator, OperatorSummary), f"the embedded operator is an OperatorSummary: {type(first.operator)}")
    check(first.operator.id == first.operator_id, "the embedded operator is the assigned one")
    again = call(
        register_contact,
        created,
        client,
        body=CreateContact(external_lead_id="tg-100500", source_id=source.id, payload="again"),
    )
    check(again.lead_id == first.lead_id, "a returning lead is the same lead")

    read = call(get_contact, ok, client, id=first.id)
    check(read.id == first.id and read.payload == {"text": "hello"}, f"the contact reads back: {read}")
    lead = call(get_lead, ok, client, id=first.lead_id)
    check([c.id for c in lead.contacts] == [first.id, again.id], "the lead holds both contacts, oldest first")
    listed = call(list_contacts, ok, client, status=ContactStatus.OPEN, limit=10)
    check({c.id for c in listed} == {first.id, again.id}, f"both contacts are listed as open: {listed}")
    closed = call(close_contact, ok, client, id=first.id)
    check(closed.status == ContactStatus.CLOSED and closed.closed_at is not None, "the contact is closed")
    assigned = call(assign_contact, ok, client, id=again.id, body=AssignContact(operator_id=boris.id))
    check(assigned.operator_id == boris.id, "the contact is assigned to Boris")
    stats = call(get_operator_stats, ok, client)
    check(sum(s.total_contacts for s in stats) == 2, f"the stats count both contacts: {stats}")
    call(get_health, ok, client)

    # A 409 and a 422 parse into the problem type, and neither wrote anything.
    taken = call(create_source, HTTPStatus.CONFLICT, client, body=CreateSource(name="Another", code="tg"))
    expect_problem(taken, HTTPStatus.CONFLICT, ErrorCode.SOURCE_CODE_TAKEN)
    invalid = call(
        create_operator,
        HTTPStatus.UNPROCESSABLE_ENTITY,
        client,
        body=CreateOperator(name="Nobody", max_active_contacts=-1),
    )
    expect_problem(invalid, HTTPStatus.UNPROCESSABLE_ENTITY, ErrorCode.VALIDATION_FAILED)
    check(
        [e.field for e in invalid.errors] == ["max_active_contacts"],
        f"the 422 names the offending field: {invalid.errors}",
    )
    check(len(call(list_sources, ok, client)) == 1, "the 409 created no source")
    check(len(call(list_operators, ok, client)) == 2, "the 422 created no operator")
    print("client walkthrough: ok")


if __name__ == "__main__":
    if len(sys.argv) != 2 or "CRM_ADMIN_TOKEN" not in os.environ:
        sys.exit("usage: CRM_ADMIN_TOKEN=TOKEN client_walkthrough.py BASE_URL")
    main(sys.argv[1], os.environ["CRM_ADMIN_TOKEN"])
