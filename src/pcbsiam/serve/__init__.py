"""The inspection service: HTTP API, review page, record store and load test.

``pcbsiam.serve.app.create_app`` builds the FastAPI app; ``pcbsiam serve`` runs it. Importing this
package imports nothing heavy, so the load-test client does not pull in torch.
"""
