"""The published contracts: the events on the four topics and the policy (rules as data).

Other teams consume these; the JSON Schemas and the AsyncAPI document are generated from them.
They stand only on the kernel's envelope and canonical JSON.
"""
