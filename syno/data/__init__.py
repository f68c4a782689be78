"""syno.data"""
