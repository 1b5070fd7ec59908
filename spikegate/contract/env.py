"""Environment variable names: how the harness hands each child what it needs.

harness --SPIKEGATE_LOAD, _PUBLISHERS, _SEED, _T0, _RUN_DIR--> Locust (locustfiles/)
harness --SPIKEGATE_TARGET_CONFIG (a TOML path)-------------> the reference target
anyone  --SPIKEGATE__SECTION__KEY=value---------------------> target config overrides
"""

from __future__ import annotations

__all__ = [
    "LOAD_ENV",
    "LOCUSTFILES_ENV",
    "OUTCOMES_ENV",
    "OWNER_ENV",
    "PUBLISHERS_ENV",
    "RUNTIME_DIR_ENV",
    "RUN_DIR_ENV",
    "SEED_ENV",
    "STATE_DIR_ENV",
    "T0_ENV",
    "TARGET_CONFIG_ENV",
    "TARGET_OVERRIDE_PREFIX",
    "WORKER_DIR_ENV",
]

# harness -> Locust
LOAD_ENV = "SPIKEGATE_LOAD"  # the [load] section as JSON (spikegate.contract.load.LoadSection)
PUBLISHERS_ENV = "SPIKEGATE_PUBLISHERS"  # {"pub-1": "key-pub-1", ...} as JSON
SEED_ENV = "SPIKEGATE_SEED"  # the scenario's seed (an integer)
T0_ENV = "SPIKEGATE_T0"  # the run's t0, epoch seconds: every row's `t` counts from it
RUN_DIR_ENV = "SPIKEGATE_RUN_DIR"  # where the recorder writes requests.jsonl and acked/
LOCUSTFILES_ENV = "SPIKEGATE_LOCUSTFILES"  # another folder with the same locustfile names
OUTCOMES_ENV = "SPIKEGATE_OUTCOMES"  # [outcomes] as JSON (contract.outcomes.OutcomeRules)
# spikegate worker -> its Locust: a folder on the worker's own disk for its copy of what it
# sent the master (requests.jsonl: its own rows; acked.txt: its acked ids), for audit
WORKER_DIR_ENV = "SPIKEGATE_WORKER_DIR"

# harness -> reference target
TARGET_CONFIG_ENV = "SPIKEGATE_TARGET_CONFIG"  # a TOML file with the target's whole config
TARGET_OVERRIDE_PREFIX = "SPIKEGATE__"  # SPIKEGATE__AUCTION__LIMIT=32 -> auction.limit = 32

# the harness with itself (live-run discovery, reaping what a killed run left)
RUNTIME_DIR_ENV = "SPIKEGATE_RUNTIME_DIR"  # live-run pointers (default $XDG_RUNTIME_DIR)
STATE_DIR_ENV = "SPIKEGATE_STATE_DIR"  # records of started children (default: runtime dir)
OWNER_ENV = "SPIKEGATE_OWNER"  # every child's mark "<harness pid>.<start>": found even if orphaned
