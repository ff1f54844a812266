# Container image and Kubernetes deployment (included by the Makefile).
#   make image                      build localhost/imageblur:dev with podman
#   make image-test                 build it, run it read-only, upload a picture, get it blurred
#   make deploy OVERLAY=dev|ha|aws  kubectl apply -k deploy/k8s/overlays/$(OVERLAY)
#   make compose-env                .env with fresh API and metrics tokens for compose.yaml
#   make undeploy OVERLAY=...       delete it all but the namespace and its volumes
#   make deploy-check               render every overlay; schemas, hadolint, checkov, settings
IMAGE     ?= localhost/imageblur:dev
OVERLAY   ?= dev
NAMESPACE ?= imageblur
KUBECTL   ?= kubectl
OVERLAY_DIR := deploy/k8s/overlays/$(OVERLAY)

.PHONY: image image-test image-test-distributed deploy undeploy deploy-check deploy-render compose-env

image:  ## build the container image with podman (makes the Debian base image first if missing)
	IMAGE=$(IMAGE) scripts/image_test.sh build

image-test:  ## build the image, run it read-only, and do an upload -> blurred result round trip
	IMAGE=$(IMAGE) scripts/image_test.sh test

image-test-distributed: install  ## the image's migrate/api/worker roles on local PostgreSQL, RabbitMQ, moto S3
	IMAGE=$(IMAGE) scripts/image_test.sh distributed

deploy-render:  ## print the manifests of OVERLAY (dev, ha, aws)
	@test -f $(OVERLAY_DIR)/kustomization.yaml || { echo "no overlay $(OVERLAY)"; exit 2; }
	$(KUBECTL) kustomize $(OVERLAY_DIR)

compose-env:  ## write .env with fresh IMAGEBLUR_API_TOKEN and IMAGEBLUR_METRICS_TOKEN (kept if set)
	scripts/tokens.sh env .env

# Schema first, then code: (1) everything but the API and worker objects (namespace,
# settings, back ends, policies, the migrate Job), (2) the Secret imageblur-tokens, which
# the operator makes (dev: made with fresh tokens when missing), (3) wait for the
# migration, (4) the rest, so new pods only start on a migrated schema (expand/contract:
# docs/operations.md). A Job's pod template cannot change: the previous one is deleted.
deploy:  ## kubectl apply -k the OVERLAY (default dev): migrate first, then roll out API and workers
	@test -f $(OVERLAY_DIR)/kustomization.yaml || { echo "no overlay $(OVERLAY)"; exit 2; }
	$(KUBECTL) -n $(NAMESPACE) delete job imageblur-migrate --ignore-not-found
	$(KUBECTL) apply -k $(OVERLAY_DIR) \
	  -l 'app.kubernetes.io/component!=api,app.kubernetes.io/component!=worker'
	KUBECTL=$(KUBECTL) scripts/tokens.sh k8s $(NAMESPACE) $(if $(filter dev,$(OVERLAY)),--generate)
	$(KUBECTL) -n $(NAMESPACE) wait --for=condition=complete job/imageblur-migrate --timeout=900s
	$(KUBECTL) apply -k $(OVERLAY_DIR)
	$(KUBECTL) -n $(NAMESPACE) rollout status deployment/imageblur-api --timeout=600s
	$(KUBECTL) -n $(NAMESPACE) rollout status deployment/imageblur-worker --timeout=600s

# Everything but the Namespace goes, so the back ends' PersistentVolumeClaims (and their
# data) stay for the next deploy; PURGE=1 deletes the Namespace too, and with it the data.
undeploy:  ## kubectl delete the OVERLAY's objects, keeping the namespace and its volumes (PURGE=1: all)
	@test -f $(OVERLAY_DIR)/kustomization.yaml || { echo "no overlay $(OVERLAY)"; exit 2; }
ifeq ($(PURGE),1)
	$(KUBECTL) delete -k $(OVERLAY_DIR) --ignore-not-found
else
	$(KUBECTL) kustomize $(OVERLAY_DIR) \
	  | awk 'BEGIN { RS = "\n---\n"; ORS = "\n---\n" } !/(^|\n)kind: Namespace\n/' \
	  | $(KUBECTL) delete --ignore-not-found -f -
endif

deploy-check: install promtool  ## render every overlay, validate (strict schemas) and lint (hadolint, checkov)
	$(BIN)/python -m pytest tests/deploy -q
