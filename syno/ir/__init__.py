"""syno.ir"""
