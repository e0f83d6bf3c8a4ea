# The secrets exist here; their values are added with `gcloud secrets versions add` (docs/deploy.md),
# so no secret value is ever in a variable, a plan or the state.
resource "google_secret_manager_secret" "service" {
  for_each  = var.secret_ids
  secret_id = each.value

  replication {
    auto {}
  }

  labels = { app = "nano-banana" }

  depends_on = [google_project_service.apis]
}
