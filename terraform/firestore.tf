# Native-mode Firestore for the rate windows and project leases. OPTIMISTIC concurrency matches how the
# limiter writes: one preconditioned commit per reservation, retried with jitter on conflict.
resource "google_firestore_database" "limits" {
  name                              = "(default)"
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "OPTIMISTIC"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.apis]
}
