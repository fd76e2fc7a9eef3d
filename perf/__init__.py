"""gpuspec performance suite (``python -m perf``).

Modules
-------
protocol
    The fixed measurement protocol (warm-up, device synchronisation, median and
    spread of N runs) and the JSON-lines result records.
suite
    The benchmarks: preproc, extraction (Case B, one bundle, a frame) and coadd
    (plain and spectroperfectionism).
e2e
    End-to-end exposure benchmark (simulate once, cached; preproc + extraction per
    camera; frames per device-hour).
report
    Generates ``docs/performance.md`` from ``perf/results/*.jsonl``.

Nothing here imports numpy at module level: ``python -m perf`` pins the BLAS/OpenMP
thread counts of each child process before numpy is imported.
"""
