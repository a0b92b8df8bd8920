"""ctxmem"""
