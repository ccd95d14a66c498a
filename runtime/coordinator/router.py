"""(being written: issue 9)"""
