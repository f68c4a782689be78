"""syno.report"""
