"""Cohorts: every pair of visits of every subject, segmented resumably, here or on a cluster.

* :mod:`~msnewlesions.cohort.pairs`: visits and the pairs made of them (consecutive or against
  the first visit);
* :mod:`~msnewlesions.cohort.bids`: a BIDS dataset's FLAIR visits (pybids);
* :mod:`~msnewlesions.cohort.manifest`: a plain CSV of pairs, for users without BIDS;
* :mod:`~msnewlesions.cohort.outputs`: where a pair's results go (a BIDS derivatives dataset, or a
  folder per pair), when they are complete, and the record of a pair that failed;
* :mod:`~msnewlesions.cohort.pair_job`: one pair segmented into a private folder and published
  whole, under a lock; a failure becomes its recorded outcome;
* :mod:`~msnewlesions.cohort.engine`: the pairs run on a local process pool or an existing Dask
  cluster; complete pairs are skipped, failures do not stop the others;
* :mod:`~msnewlesions.cohort.group`: the cohort table and its page.

This layer sits above ``segment`` and ``report``, beside ``commands``.
"""
