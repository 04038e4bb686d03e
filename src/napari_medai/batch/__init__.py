"""Cohort processing on Dask: an embedded LocalCluster by default, or an existing cluster."""
