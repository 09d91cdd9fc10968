"""Converters from other frameworks' agent definitions to fsmflow's format.

Each is a pure function from the parsed document to an fsmflow definition and a
report of what could not be carried over; reading the file is the CLI's job.
"""
