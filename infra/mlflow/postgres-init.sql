-- Run once, when the PostgreSQL volume is first initialised: the basic-auth app's users and
-- permissions live beside the tracking store, in their own database.
CREATE DATABASE mlflow_auth OWNER mlflow;
