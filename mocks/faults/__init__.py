"""Fault injection at the platform boundary: proxies in front of instances, rules, naming faults."""
