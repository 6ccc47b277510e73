"""What ``socialrisk neo4j`` decides without a server."""

from __future__ import annotations

from socialrisk import neo4j_server


def test_the_import_tool_may_use_the_stopped_servers_memory() -> None:
    assert neo4j_server._sum_sizes("2g", "1g") == "3072m"
    assert neo4j_server._sum_sizes("512m", "128m") == "640m"
    assert neo4j_server._sum_sizes("1G", "1048576") == "1025m"  # case and bytes as Neo4j reads them


def test_the_procedures_are_built_again_only_when_their_source_changes() -> None:
    first = neo4j_server._procedures_digest()
    assert first == neo4j_server._procedures_digest() and len(first) == 16
    sources = {p.name for p in (neo4j_server.PROCEDURES / "src").rglob("*.java")}
    assert "EncodedEdges.java" in sources
