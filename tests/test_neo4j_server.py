"""What ``socialrisk neo4j`` decides without a server."""

from __future__ import annotations

from socialrisk import neo4j_server


def test_the_import_tool_may_use_the_stopped_servers_memory() -> None:
    assert neo4j_server._sum_sizes("2g", "1g") == "3072m"
    assert neo4j_server._sum_sizes("512m", "128m") == "640m"
    assert neo4j_server._sum_sizes("1G", "1048576") == "1025m"  # case and bytes as Neo4j reads them


def test_the_procedures_are_built_again_only_when_their_source_changes(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import shutil

    copy = tmp_path / "procedures"
    shutil.copytree(neo4j_server.PROCEDURES, copy, ignore=shutil.ignore_patterns("target"))
    monkeypatch.setattr(neo4j_server, "PROCEDURES", copy)
    first = neo4j_server._procedures_digest()
    assert first == neo4j_server._procedures_digest() and len(first) == 16
    source = next(copy.rglob("EncodedEdges.java"))
    source.write_text(source.read_text() + "\n// changed\n")
    assert neo4j_server._procedures_digest() != first
