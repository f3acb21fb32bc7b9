"""``restore bench``: the standard task suite of ``../shared/protocol.md`` in three parts —
:mod:`~restore.bench.suite` (tasks, problems, classical baselines, methods), :mod:`~restore.bench.run`
(the resumable run over images × tasks × methods) and :mod:`~restore.bench.report` (summary and pictures).

Outputs under ``out``::

    results.csv                    one row per image × task × method, appended as each finishes
    settings.json                  what decides the numbers; a rerun with the same settings resumes
    summary.md                     means per task × method (best in bold), Δ PSNR to the baseline, versions
    {task}.png                     measurement | baseline | each sampler | reference, first images
    {task}/{method}/{image}.png    every restoration (8-bit; the metrics use the float result)
"""
