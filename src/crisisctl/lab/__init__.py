"""The crisis lab: a sick scanning service, its crowd of pollers, and `crisisctl demo`'s script.

`scanner` is the service (sick, or fixed behind the guard), `crowd` its dashboard tabs,
`process` runs the service in a uvicorn process, `crisis` plays the whole crisis with
`measure` (triage, load, validate, compare), `incident_log` and `story` (what it learns).
"""
