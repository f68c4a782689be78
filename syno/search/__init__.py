"""syno.search"""
