"""The README's first command, end to end at a tiny size: train -> Parquet -> SQL."""
from __future__ import annotations

import store
from trainer import run


def test_quick_dynamic_run_writes_queryable_logs(tmp_path):
    rc = run.main(["--preset", "quick", "--strategy", "dynamic", "--name", "smoke", "--runs-dir", str(tmp_path),
                   "--epochs", "2", "--n-train", "512", "--batch-size", "128", "--eval-n", "128",
                   "--heldout", "128", "--quiet"])
    assert rc == 0
    con = store.open(tmp_path)
    per_epoch = con.query_df("SELECT epoch, count(*) n, count(DISTINCT idx) u, min(fosc) lo, avg(steps) s "
                             "FROM examples GROUP BY epoch ORDER BY epoch")
    assert per_epoch["epoch"].tolist() == [0, 1]
    assert per_epoch["n"].tolist() == [512, 512] and per_epoch["u"].tolist() == [512, 512]
    assert (per_epoch["lo"] >= -1e-5).all()
    assert ((per_epoch["s"] >= 1) & (per_epoch["s"] <= 10)).all()
    epochs = con.query_df("SELECT epoch, c_t FROM epochs ORDER BY epoch")
    assert epochs["c_t"].round(6).tolist() == [0.5, 0.375]  # c_t = 0.5 - t * 0.5 / 4
    state = con.query_df("SELECT state FROM runs WHERE run = 'smoke'")["state"].tolist()
    assert state == ["finished"]
    assert len(con.query_df("SELECT * FROM evals WHERE checkpoint = 'last'")) == 5
