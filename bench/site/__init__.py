"""``python -m bench site``: a static site of a results folder (and of the run folders behind it).

Pipeline: :mod:`discover` (validate the folder, find its tables, records, figures, README, findings) ->
:mod:`cells` (the records by ``config_hash``, joined with their run folders under ``runs=``: seeds, neighbours, the
re-run command, quantizer ranges) -> :mod:`tables` (each CSV as an HTML table model: sort keys, heatmapped gaps,
links to cell pages, filters, the paper's numbers from :mod:`reference`) -> :mod:`build` (Jinja2 templates, the
DataTables files of the itables package from :mod:`assets`, training curves from :mod:`plots`).

Like the aggregator it reads records only: no torch, no registries.
"""

from bench.site.build import SiteReport, build_site

__all__ = ["SiteReport", "build_site"]
