package export

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// reconcileExport makes the broker hold this cluster's export of key as
// its ServiceExport, Service and EndpointSlices say, and writes the
// ServiceExport's conditions.
func (c *Controller) reconcileExport(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	published, inBroker, svcView := c.view(ns, name)
	se, err := c.exports.ServiceExports(ns).Get(name)
	if apierrors.IsNotFound(err) {
		if inBroker {
			c.log.Info("withdrawing export", "service", key)
			return c.withdraw(ctx, ns, name)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !se.DeletionTimestamp.IsZero() {
		if inBroker {
			return c.withdraw(ctx, ns, name)
		}
		return nil
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		svc = nil
	} else if err != nil {
		return err
	}
	objs, err := c.sliceIndex.ByIndex(indexService, key)
	if err != nil {
		return err
	}
	eps := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		eps = append(eps, o.(*discoveryv1.EndpointSlice))
	}
	exp, validity := BuildExport(c.cfg.ClusterID, se, svc, eps)
	exp = MeshExport(exp, c.self())

	var pub Publication
	var retry error
	switch {
	case validity.Valid && (inBroker && sameExport(published, exp) || c.wasSent(key, exp)):
		pub.InBroker = true
	case validity.Valid:
		if err := c.cfg.Broker.PublishExport(ctx, exp); err != nil {
			pub.Err = err
			retry = fmt.Errorf("publish %s: %w", key, err)
		} else {
			// The broker answers after a durable commit: the export is out.
			// Recording it now saves publishing again before its watch event
			// comes back; a later event replaces it either way.
			pub.InBroker = true
			c.mu.Lock()
			c.sent[key] = exp
			c.mu.Unlock()
			c.log.Info("published export", "service", key, "type", exp.Type, "endpoints", len(exp.Endpoints))
		}
	case inBroker:
		c.log.Info("withdrawing invalid export", "service", key, "reason", validity.Reason)
		if err := c.withdraw(ctx, ns, name); err != nil {
			retry = err
		}
	}
	if pub.InBroker {
		svcView = c.resolvedWith(exp)
	}
	if err := c.writeConditions(ctx, se.Namespace, se.Name, ExportConditions(se.Generation, validity, pub, svcView)); err != nil {
		return err
	}
	return retry
}

// wasSent reports whether exp was published and its watch event has not
// come back yet.
func (c *Controller) wasSent(key string, exp api.Export) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	sent, ok := c.sent[key]
	return ok && sameExport(sent, exp)
}

func (c *Controller) withdraw(ctx context.Context, ns, name string) error {
	if err := c.cfg.Broker.WithdrawExport(ctx, c.cfg.ClusterID, ns, name); err != nil {
		return fmt.Errorf("withdraw %s/%s: %w", ns, name, err)
	}
	return nil
}

// writeConditions updates the ServiceExport's status when the conditions
// differ from what it holds (a conflict on the write is retried by the queue).
func (c *Controller) writeConditions(ctx context.Context, ns, name string, desired []metav1.Condition) error {
	se, err := c.exports.ServiceExports(ns).Get(name)
	if err != nil {
		return nil // gone meanwhile
	}
	client := c.cfg.MCS.MulticlusterV1beta1().ServiceExports(ns)
	for attempt := 0; ; attempt++ {
		conds, changed := MergeConditions(se.Status.Conditions, desired)
		if !changed {
			return nil
		}
		se = se.DeepCopy()
		se.Status.Conditions = conds
		_, err = client.UpdateStatus(ctx, se, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) || attempt > 0 {
			break
		}
		// Our cache is behind (often our own last write): once more, fresh.
		if se, err = client.Get(ctx, name, metav1.GetOptions{}); err != nil {
			break
		}
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update status of ServiceExport %s/%s: %w", ns, name, err)
	}
	return nil
}

// sameExport compares exports as the broker stores them (JSON), so that
// time zones and nil-versus-empty make no difference. The creation time is
// left out: a broker may keep the time it first received the export
// instead of ours, and that must not make us publish again and again.
func sameExport(a, b api.Export) bool {
	a.CreatedAt, b.CreatedAt = time.Time{}, time.Time{}
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
