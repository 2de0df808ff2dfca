"""The `soap` connector sends the vaulted credential to the service's own origin (scheme, host and port) and nowhere
else: a document the WSDL imports from another host, or a WSDL served by a host that is not the service's, is fetched
without it (DESIGN.md, "The control plane is a privilege boundary").

Two sample inventories (sandbox/soap_inventory.py) on two loopback addresses: A on 127.0.0.1 runs the service, B on
127.0.0.2 serves the documents a WSDL imports or the WSDL itself. Each counts the WSDL and schema requests it received
with and without a credential header (Authorization or X-Api-Key), and A's service refuses a call without the token,
so a read that succeeds shows that A received it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.base import PermanentError
from connectors.registry import connector_for
from connectors.soap import connector as soap_connector
from sandbox.testing import crm_control as side_door
from tests.connectors.test_soap import make_system, start_inventory
from tests.stack import Stack

HEADER = {"kind": "header", "header_name": "X-Api-Key"}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    stack = Stack(tmp_path_factory.mktemp("soap-origins"))
    try:
        yield start_inventory(stack, "service-host", "127.0.0.1"), start_inventory(stack, "other-host", "127.0.0.2")
    finally:
        stack.stop_all()


@pytest.fixture(autouse=True)
def fresh(hosts: tuple[str, str]) -> None:
    """Both inventories as seeded, and no WSDL already parsed by this process: each test loads its own."""
    for url in hosts:
        side_door(url, "/_control/reset")
    soap_connector._clients.clear()


def documents(url: str, name: str) -> tuple[int, int]:
    """(requests with a credential header, requests without) for the inventory's "wsdl" or "schema"."""
    counted = side_door(url, "/_stats")["documents"][name]
    return counted["with_credential"], counted["without_credential"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("guarded", "endpoint", "credential", "wsdl_gets"),
    [
        (False, False, None, (0, 1)),  # where the service is, the WSDL says: loaded without the credential
        (True, False, HEADER, (1, 1)),  # A refuses an anonymous load: asked again with it, A being the service
        (False, True, None, (1, 0)),  # "endpoint" names A: the WSDL on A gets it from the first request
    ],
    ids=["public-wsdl", "guarded-wsdl", "endpoint-set"],
)
def test_a_wsdl_importing_its_types_from_another_host_sends_that_host_no_credential(
    hosts, guarded, endpoint, credential, wsdl_gets
) -> None:
    service_host, other_host = hosts
    side_door(
        service_host, "/_control/documents", {"schema_location": f"{other_host}/inventory.xsd", "guarded": guarded}
    )
    extra = {"endpoint": f"{service_host}/inventory"} if endpoint else {}
    system = make_system(service_host, credential=credential, **extra)

    assert connector_for(system).read("items", "WID-100", ["quantity"]) == {"quantity": 120}  # A took the credential

    with_credential, without = documents(other_host, "schema")
    assert with_credential == 0 and without >= 1  # B was asked for the types, never with the credential
    assert documents(service_host, "wsdl") == wsdl_gets
    assert connector_for(system).health().ok  # fetches the WSDL again: on the service's origin, with the credential
    assert documents(service_host, "wsdl") == (wsdl_gets[0] + 1, wsdl_gets[1])
    assert documents(other_host, "schema")[0] == 0


@pytest.mark.django_db
@pytest.mark.parametrize("guarded", [False, True], ids=["public", "guarded"])
def test_a_wsdl_served_by_another_host_than_the_endpoint_never_gets_the_credential(hosts, guarded) -> None:
    service_host, other_host = hosts
    side_door(other_host, "/_control/documents", {"schema_location": None, "guarded": guarded})
    system = make_system(other_host, endpoint=f"{service_host}/inventory", health_operation="Ping")

    if guarded:  # B wants the token for its WSDL; it is not the service, so it is not given it
        with pytest.raises(PermanentError, match="loading the WSDL answered 401"):
            connector_for(system).read("items", "WID-100")
    else:
        assert connector_for(system).read("items", "WID-100", ["quantity"]) == {"quantity": 120}  # A took it
        assert connector_for(system).health().ok
        assert side_door(service_host, "/_stats")["requests_total"] == 2

    assert documents(other_host, "wsdl")[0] == 0 and documents(other_host, "wsdl")[1] >= 1
    assert side_door(other_host, "/_stats")["requests_total"] == 0  # and no call went to B's own service


@pytest.mark.django_db
def test_a_wsdl_may_not_import_documents_from_a_host_gatehouse_may_not_connect_to(hosts, settings) -> None:
    service_host, other_host = hosts
    settings.GATEHOUSE_CONNECTOR_HOSTS = [service_host.removeprefix("http://")]  # 127.0.0.1:port alone
    side_door(service_host, "/_control/documents", {"schema_location": f"{other_host}/inventory.xsd"})
    system = make_system(service_host, credential=HEADER)

    with pytest.raises(PermanentError, match=r"refers to a document on a host it may not: 127\.0\.0\.2"):
        connector_for(system).read("items", "WID-100")
    assert documents(other_host, "schema") == (0, 0)  # never asked at all


@pytest.mark.django_db
def test_a_wsdl_naming_its_service_on_a_host_gatehouse_may_not_connect_to_gets_no_call(hosts, settings) -> None:
    """A WSDL rewritten to name the cloud's metadata address as the service: the credential would go there."""
    service_host, _ = hosts
    settings.GATEHOUSE_CONNECTOR_HOSTS = [service_host.removeprefix("http://")]
    side_door(service_host, "/_control/documents", {"service_location": "http://169.254.169.254/inventory"})
    system = make_system(service_host, credential=HEADER)

    with pytest.raises(PermanentError, match=r"loading the WSDL refused: 169\.254\.169\.254 is a private"):
        connector_for(system).read("items", "WID-100")
    side_door(service_host, "/_control/documents", {"service_location": None})
    soap_connector._clients.clear()
    assert connector_for(system).read("items", "WID-100", ["quantity"]) == {"quantity": 120}  # the same, named right
