#!/usr/bin/env bash
# Creates benchmarks/.venv-datatrove: datatrove, the baseline of benchmarks/filter_agreement.py,
# benchmarks/filters.py and benchmarks/fineweb_chain.py, installed next to this project so that both run in one process.
#
# datatrove's English filters split words with spaCy's *blank* English pipeline
# (spacy.blank("en") plus the rule-based sentencizer), which ships inside the spacy wheel: no spaCy
# model is downloaded, now or at run time. lxml_html_clean is needed by its import chain;
# tldextract, pyahocorasick and fasteners by its URL and language filters; faust-cchardet,
# python-magic (on the system's libmagic) and orjson by its WARC reader and JSONL writer. The project is installed
# with requirements.lock as constraints, so the packages both sides share (numpy, pyarrow, ray, ...)
# have the project's versions.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/benchmarks/.venv-datatrove"
PYTHON="${PYTHON:-python3.11}"

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --constraint "$ROOT/requirements.lock" \
    "datatrove==0.10.1" "spacy==3.8.18" "lxml_html_clean==0.4.6" \
    "tldextract==5.4.0" "pyahocorasick==2.3.1" "fasteners==0.20" \
    "faust-cchardet==3.2.0" "python-magic==0.4.27" "orjson==3.13.0" \
    --editable "$ROOT" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import datatrove, spacy, pipeline.filters"
echo "ready: $VENV/bin/python"
