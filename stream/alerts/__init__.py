"""Threshold alerts: rules over indicator windows, their lifecycle, delivery and supervision tickets.

:mod:`.engine` is the pure rule engine; :mod:`.stage` runs it in the ingest batch; :mod:`.delivery`
sends alerts to Alertmanager and a webhook; :mod:`.supervision` keeps the supervision tickets.
"""
