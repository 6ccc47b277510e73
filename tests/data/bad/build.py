"""Build the bad-input corpus: one directory per case, each a data directory as a user would
hand it to ``socialrisk load``. What each case must give is in ``cases.json`` beside this file.

    python tests/data/bad/build.py      # rewrites the case directories (deterministic)

The files are committed; ``tests/loaders/test_bad_inputs.py`` loads every case both ways.
"""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
USERS = "user_id,age\nu1,30\nu2,41\nu3,25\n"
LINKS = "user_id,kind,value,first_seen,last_seen\nu1,device,DEV-1,2026-01-01,2026-02-01\nu2,device,DEV-1,2026-01-05,2026-02-03\n"
RELATIONS = "src,dst,kind,weight,ts\nu1,u2,transfer,50,2026-03-01\nu2,u3,contact,,2026-03-02\n"
FLAGS = "user_id,label,severity,ts\nu1,fraud,1.0,2026-04-01\n"


def _text(case: str, files: dict[str, str | bytes]) -> None:
    root = HERE / case
    root.mkdir()
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (root / name).write_bytes(data)


def _gz(text: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as handle:
        handle.write(text.encode())
    return buf.getvalue()


def build() -> None:
    for old in HERE.iterdir():
        if old.is_dir():
            shutil.rmtree(old)
    base = {"users.csv": USERS, "links.csv": LINKS, "relations.csv": RELATIONS, "flags.csv": FLAGS}
    cases: dict[str, dict[str, str | bytes]] = {
        "missing_column": {"links.csv": "user_id,kind\nu1,device\n"},
        "renamed_columns": {"relations.csv": "source,target,kind\nu1,u2,transfer\n"},
        "wrong_type_weight": {**base, "relations.csv": RELATIONS + "u3,u1,transfer,abc,2026-03-03\n"},
        "empty_file": {"users.csv": ""},
        "header_only": {"users.csv": "user_id,age\n"},
        "duplicated_rows": {**base, "relations.csv": RELATIONS + "u1,u2,transfer,50,2026-03-01\n"},
        "self_relation": {**base, "relations.csv": RELATIONS + "u3,u3,transfer,10,2026-03-05\n"},
        "relation_to_unknown_user": {**base, "relations.csv": RELATIONS + "u3,stranger,transfer,10,2026-03-05\n"},
        "nan_weight": {**base, "relations.csv": RELATIONS + "u3,u1,transfer,NaN,2026-03-03\n"},
        "infinite_weight": {**base, "relations.csv": RELATIONS + "u3,u1,transfer,inf,2026-03-03\n"},
        "negative_link_weight": {**base, "links.csv": "user_id,kind,value,weight\nu1,device,DEV-1,-1\nu2,device,DEV-1,1\n"},
        "severity_out_of_range": {**base, "flags.csv": "user_id,label,severity\nu1,fraud,1.5\n"},
        "unparseable_timestamp": {**base, "relations.csv": RELATIONS + "u3,u1,transfer,5,yesterday\n"},
        "future_timestamp": {**base, "relations.csv": RELATIONS + "u3,u1,transfer,5,2999-01-01\n"},
        "non_utf8_bytes": {"users.csv": b"user_id,city\nu1,Z\xfcrich\n"},
        "utf8_bom": {"users.csv": "\ufeff" + USERS},
        "crlf_line_endings": {"users.csv": USERS.replace("\n", "\r\n"), "relations.csv": RELATIONS.replace("\n", "\r\n")},
        "quoted_newline": {"users.csv": 'user_id,note\nu1,"first line\nsecond line"\nu2,plain\n'},
        "very_long_id": {"users.csv": "user_id\nu1\n" + "u" * 300 + "\n"},
        "cypher_like_ids": {
            "users.csv": 'user_id\n"x""}) DETACH DELETE n //"\nu2\n',
            "relations.csv": 'src,dst,kind\n"x""}) DETACH DELETE n //",u2,transfer\n',
        },
        "hub_identifier_100k_users": {
            "links.csv.gz": _gz("user_id,kind,value\n" + "".join(f"h{i:06d},ip,10.0.0.1\n" for i in range(100_000)))
        },
        "flag_for_unknown_user": {**base, "flags.csv": FLAGS + "ghost,fraud,1.0,2026-04-02\n"},
        "parquet_wrong_schema": {"links.parquet": b""},  # written below
        "truncated_csv_gz": {"relations.csv.gz": _gz(RELATIONS * 2000)[:600]},
        "unknown_flag_label": {**base, "flags.csv": "user_id,label\nu1,suspicious\n"},
        "bad_kind": {**base, "links.csv": "user_id,kind,value\nu1,Device Type!,DEV-1\n"},
        "empty_id": {"users.csv": "user_id,age\nu1,30\n,41\n"},
        "first_seen_after_last_seen": {"links.csv": "user_id,kind,value,first_seen,last_seen\nu1,device,DEV-1,2026-03-01,2026-02-01\n"},
        "numeric_ids_in_parquet": {"users.parquet": b""},  # written below
        "table_in_two_formats": {"users.csv": USERS, "users.csv.gz": _gz(USERS)},
        "no_table": {"customers.csv": USERS},
        "duplicate_header": {"users.csv": "user_id,age,age\nu1,1,2\n"},
        "infinite_feature": {"users.csv": "user_id,income\nu1,1000\nu2,inf\n"},
        "several_bad_rows": {
            **base,
            "relations.csv": RELATIONS
            + "u3,u1,transfer,abc,2026-03-03\n"  # weight not a number
            + "u1,u3,Transfer Out,5,2026-03-03\n"  # kind
            + ",u3,transfer,5,2026-03-03\n"  # empty src
            + "u2,u1,transfer,7,not-a-date\n"  # time
            + "u3,u2,transfer,8,2026-03-04\n",
        },
    }
    for case, files in cases.items():
        _text(case, files)
    pq.write_table(pa.table({"user": ["u1"], "kind": ["device"], "identifier": ["DEV-1"]}), HERE / "parquet_wrong_schema" / "links.parquet")
    pq.write_table(pa.table({"user_id": pa.array([7, 12], pa.int64()), "age": [30.0, 41.0]}), HERE / "numeric_ids_in_parquet" / "users.parquet")


if __name__ == "__main__":
    build()
