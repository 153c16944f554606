"""Running the jobs on a schedule: what the DAG files import (``schedule``: when and what a run covers;
``tasks``: the task factory), the ``reco`` command line (``cli``), the local Airflow harness
(``harness``) and the rehearsal of days of runs with faults (``rehearse``, ``rehearsal_plan``).

The top of the stack: ``orchestration`` imports ``jobs`` and everything below; only ``dags/`` imports it.
"""
