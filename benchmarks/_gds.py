"""OpenGDS's personalized PageRank on the graph in Neo4j, the peer the Neo4j benchmarks measure
socialrisk against: ``gds.graph.project`` of users and identifiers (``USES`` and ``RELATES``,
undirected, unweighted) and ``gds.pageRank.stream`` with ``sourceNodes``."""

from __future__ import annotations

import time
from typing import Any

GDS_PROJECT = """
CALL gds.graph.project('socialrisk_bench', ['User', 'Identifier'],
  {USES: {orientation: 'UNDIRECTED'}, RELATES: {orientation: 'UNDIRECTED'}})
YIELD nodeCount, relationshipCount RETURN nodeCount, relationshipCount
"""
GDS_PAGERANK = """
MATCH (u:User) WHERE u.id IN $ids WITH collect(u) AS seeds
CALL gds.pageRank.stream('socialrisk_bench', {sourceNodes: seeds, dampingFactor: 0.85, tolerance: $tol, maxIterations: $max_iter})
YIELD nodeId, score
RETURN count(*) AS n, sum(score) AS total, max(score) AS top
"""
GDS_DROP = "CALL gds.graph.drop('socialrisk_bench', false) YIELD graphName RETURN graphName"


def gds_pagerank(run: Any, seeds: list[str], *, tol: float, max_iter: int) -> dict[str, Any]:
    """Project, stream PageRank from the ``seeds`` (user ids), drop the projection; ``run`` is
    the driver's ``execute_query``. Times in seconds."""
    run(GDS_DROP, database_="neo4j")
    t0 = time.perf_counter()
    projected = run(GDS_PROJECT, database_="neo4j").records[0]
    t_project = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = run(GDS_PAGERANK, ids=seeds, tol=tol, max_iter=max_iter, database_="neo4j").records[0]
    t_pr = time.perf_counter() - t1
    total = time.perf_counter() - t0
    run(GDS_DROP, database_="neo4j")
    return {
        "project_s": round(t_project, 2), "pagerank_stream_s": round(t_pr, 2), "total_s": round(total, 2),
        "graph": {"nodes": projected["nodeCount"], "relationships": projected["relationshipCount"]}, "scores_streamed": res["n"],
        "_total": total, "_pagerank": t_pr,
    }
