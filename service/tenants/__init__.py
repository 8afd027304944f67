"""Tenants, their roles and quotas: who is calling, what the role lets it do, and which
records and uploads it owns.

registry: the tenants file (and SHARPNESS_API_KEY as one admin) and the key lookup.
access: the request's tenant and the route-level check of role and ownership.
listing: a tenant's own records, page by page.
quotas: active runs, storage and requests per minute, each a 429 with Retry-After.
"""
