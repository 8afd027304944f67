"""Jobs: submit, read, list, cancel; their pictures and the measure catalogue."""
