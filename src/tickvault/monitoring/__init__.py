"""The pieces of the performance monitor, one concern a module.

``tickvault.services.database_performance`` puts them together behind the public API.
"""
