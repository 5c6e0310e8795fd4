"""The duty console (issue #6): the live web page where 12349 duty staff act on alerts."""
