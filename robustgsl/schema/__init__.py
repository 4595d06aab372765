"""The on-disk formats, one module per folder kind: file names, columns, JSON fields, arrays, units."""
