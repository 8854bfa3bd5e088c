"""benchmarks/dota_diagnosis.py writes reports without this machine's paths."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import dota_diagnosis  # noqa: E402


def test_report_paths_are_portable():
    text = ('"/home/u/wt/docs/results/ablation/decide/a.json" `/srv/s/runs/ablation/decide/runs/r/last.pt` '
            '"/home/u/wt/fss_core/models/fss-n-aerial.pt (backbone+neck)" "/srv/t/runs/ablation/decide/data/x"')
    out = dota_diagnosis.portable(text, ["/srv/s/runs/ablation", "/srv/t/runs/ablation"])
    assert out == ('"./docs/results/ablation/decide/a.json" `OUT/decide/runs/r/last.pt` '
                   '"./fss_core/models/fss-n-aerial.pt (backbone+neck)" "OUT2/decide/data/x"')
