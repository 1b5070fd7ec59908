"""What the harness, the Locust processes and the target agree on, written once.

    spikegate.contract.env       environment variable names passed between the processes
    spikegate.contract.outcomes  outcome names, the decision header and its values, classify()
    spikegate.contract.rundir    the run directory: file names, row fields, event kinds,
                                 the JSON-lines writer and reader
    spikegate.contract.load      the [load] model (shapes, arrivals, modes) both sides validate

Every process imports from here and nothing else redefines these names (tests/unit/
test_contract.py greps the tree for copies). The modules import only the standard library,
except `load`, which needs pydantic: this `__init__` imports none of them, so the target's
stdlib-only backpressure primitives can use `outcomes` without pulling pydantic in.
"""
