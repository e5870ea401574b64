"""lcrag's own HTTP routers, one per resource (collections, compare, adapters, kv policies).

They arrive with the issues that build those resources; the app mounts each router listed here.
"""
