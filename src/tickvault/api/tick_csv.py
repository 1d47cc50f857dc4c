"""What a CSV upload must start with, as a pattern the OpenAPI description can state.

A header row naming ``timestamp`` and ``symbol`` or ``instrument_id``, in any order among
other columns, each name bare or in double quotes; then anything (rows the service checks one
by one). Every text the pattern matches is one the CSV reader takes; the reader takes a few
odder headers too (``""timestamp``), which the API refuses so as to keep to the schema.
"""

import re

_FIELD = r'(?:[^",\r\n]*|"(?:[^"\r\n]|"")*")'
_TIME = r'(?:timestamp|"timestamp")'
_INSTRUMENT = r'(?:symbol|"symbol"|instrument_id|"instrument_id")'
_EITHER_ORDER = rf"(?:{_TIME}(?:,{_FIELD})*,{_INSTRUMENT}|{_INSTRUMENT}(?:,{_FIELD})*,{_TIME})"

# ECMA 262 and Python read it alike: a JSON Schema validator, hypothesis and `re` agree.
TICK_CSV_PATTERN = rf"^\ufeff?(?:{_FIELD},)*{_EITHER_ORDER}(?:,{_FIELD})*(?:[\r\n][\s\S]*)?$"
TICK_CSV = re.compile(TICK_CSV_PATTERN)
TICK_CSV_RULE = (
    "the first line is a header naming timestamp and symbol or instrument_id, "
    "bare or in double quotes"
)
