// Tests of this module land with the issue that builds it.
